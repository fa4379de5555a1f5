"""Meta-learning: the inner loop, the meta-learners (MAML, FOMAML, Reptile, Meta-SGD), offline training and checkpoints."""
