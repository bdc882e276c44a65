"""Several processes on Lightning's strategies (``trainer=ddp``): the world size planned from the config, the rank a
launcher announces, and how one global batch is shared between the ranks (:mod:`.share`)."""
