"""Training data: kohya folders → captions → buckets → data plan → dataset + bucket batch sampler."""
