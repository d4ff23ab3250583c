"""Work done on a code before its run (compiling Go)."""
