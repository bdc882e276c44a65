"""Numeric precision of a run [kohya: mixed_precision, full_fp16, full_bf16, no_half_vae]: which dtype each part is
kept in (:mod:`.policy`), the fp16 gradient scaler of ``full_fp16`` (:mod:`.scaler`) and opt-in stochastic rounding of
bf16 updates (:mod:`.rounding`)."""
