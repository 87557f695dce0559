"""What the harness and the applications share: the progress display and subprocesses in their own process group."""
