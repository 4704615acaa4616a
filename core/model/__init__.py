"""Stage 3, the model: datasets and backbones, fine-tuning with progress events, training runs and
background jobs, the model registry, evaluation, model-assisted cleaning, and the scoring reference
(softmax, energy, the out-of-domain threshold) each version carries."""
