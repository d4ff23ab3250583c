"""Units of work: each public function is one transaction and its single commit point."""
