"""Where watches outlive the process: the store protocol and its backends."""
