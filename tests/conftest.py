"""Suite-wide settings: one torch thread per test process.

The suite runs as two xdist workers on two cores; tiny models made of many small ops slow down by
an order of magnitude when each worker's OpenMP threads compete for the same cores.
"""

import torch

torch.set_num_threads(1)
