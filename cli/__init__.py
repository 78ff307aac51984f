"""The `rayfeed` command line: the composition root that wires app/, training/ and the rest."""
