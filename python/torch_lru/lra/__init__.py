"""Long Range Arena: generators and readers for the six tasks, in the official file layouts."""
