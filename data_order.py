"""
The paper's training data order (its App. A.2), as opposed to nanoGPT's random windows: epochs over
non-overlapping block_size windows. Each epoch starts the windows at a seeded boundary offset in
[0, block_size) and visits every window once, in a seeded shuffled order. Under DDP each process
takes a disjoint share of every epoch. Everything follows from (seed, epoch), so the position in
the order, (epoch, index), is all a checkpoint needs to continue exactly.
"""
import numpy as np


def epoch_windows(n_tokens, block_size, seed, epoch):
    """Start offsets of epoch `epoch`'s windows in visiting order. A window is block_size inputs plus
    the next token as the last target, so it needs block_size + 1 tokens from its offset."""
    rng = np.random.default_rng([seed, epoch])
    shift = int(rng.integers(block_size))
    starts = np.arange(shift, n_tokens - block_size, block_size)  # each window ends before the last token
    return starts[rng.permutation(len(starts))]


class EpochOrder:
    """The windows of this process (rank of world_size), epoch after epoch: next(n) gives n offsets.
    Each process takes positions rank, rank + world_size, ... of every epoch's order; the last
    len % world_size windows of an epoch are left out so the processes stay in step."""

    def __init__(self, n_tokens, block_size, seed, rank=0, world_size=1):
        self.n_tokens, self.block_size, self.seed = n_tokens, block_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0  # the next window: position `index` of this process's share of `epoch`
        self._share = None

    def share(self):
        if self._share is None:
            order = epoch_windows(self.n_tokens, self.block_size, self.seed, self.epoch)
            order = order[:len(order) // self.world_size * self.world_size]
            self._share = order[self.rank::self.world_size].tolist()
        return self._share

    def next(self, n):
        offsets = []
        while len(offsets) < n:
            share = self.share()
            if self.index == len(share):
                self.epoch, self.index, self._share = self.epoch + 1, 0, None
                continue
            take = share[self.index:self.index + n - len(offsets)]
            offsets += take
            self.index += len(take)
        return offsets

    def state_dict(self):
        return {'epoch': self.epoch, 'index': self.index}

    def load_state_dict(self, state):
        self.epoch, self.index, self._share = state['epoch'], state['index'], None
