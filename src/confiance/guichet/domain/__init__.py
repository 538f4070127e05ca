"""Pure domain rules of the guichet: no I/O, no database, no clock reads (time is passed in)."""
