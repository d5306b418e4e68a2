"""Programs built on the library: the demo (`make demo`) and cwarp-preview."""
