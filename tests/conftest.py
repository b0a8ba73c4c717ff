import torch

# The suite runs on a shared 2-core machine: one intra-op thread per test process keeps runs predictable.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
