"""The one exception type for bad or missing data files, and the line reader that raises it."""

from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union


class DataError(ValueError):
    """A data file is missing or malformed: the message names the file, the line and what was expected."""

    def __init__(self, path: Union[str, Path], problem: str, line: Optional[int] = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line = str(path), line


def text_lines(path: Union[str, Path]) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; a line that is not UTF-8 is a DataError naming it."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not UTF-8 text (byte {e.start} of the line)", lineno) from None
