"""Training: the loop (:mod:`.loop`: checkpoints, EMA, min-SNR, mixed precision, DDP) and what it trains
(:mod:`.plan`: datasets, recipes, one job per model kind)."""
