"""`codeactions bench` (`make bench`): the fast path's figures on this machine (runner.py)."""
