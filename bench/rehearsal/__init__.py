"""Release rehearsals on the real local stack: ``python -m bench.rehearsal``."""
