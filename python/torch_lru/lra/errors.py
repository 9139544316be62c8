"""The one exception type for bad or missing data files."""

from pathlib import Path
from typing import Optional, Union


class DataError(ValueError):
    """A data file is missing or malformed: the message names the file, the line and what was expected."""

    def __init__(self, path: Union[str, Path], problem: str, line: Optional[int] = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line = str(path), line
