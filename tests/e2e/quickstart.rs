// filled in with the README walk-through
