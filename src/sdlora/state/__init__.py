"""Training states: what a state folder holds, how it is written and found, kohya's retention rules, resume checks."""
