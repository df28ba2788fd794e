"""make bench: boot phases, sizes and build times against floors measured in the same run."""
