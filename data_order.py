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
    All processes step through each epoch's order together: from the shared position p, process r takes
    windows p + r, p + r + world_size, ..., so their windows are disjoint. An epoch's last windows, fewer than
    world_size, are left out so the processes stay in step. The position is the same in every process, so a
    run resumed on another number of processes continues the epoch where it stopped."""

    def __init__(self, n_tokens, block_size, seed, rank=0, world_size=1):
        self.n_tokens, self.block_size, self.seed = n_tokens, block_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0  # the next windows: from position `position` of epoch `epoch`'s order
        self._order = None

    def order(self):
        if self._order is None:
            self._order = epoch_windows(self.n_tokens, self.block_size, self.seed, self.epoch).tolist()
        return self._order

    def next(self, n):
        offsets = []
        while len(offsets) < n:
            order, ws = self.order(), self.world_size
            rounds = min(n - len(offsets), (len(order) - self.position) // ws)  # whole rounds left in this epoch
            if rounds == 0:
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
                continue
            offsets += order[self.position + self.rank:self.position + rounds * ws:ws]
            self.position += rounds * ws
        return offsets

    def state_dict(self):
        return {'epoch': self.epoch, 'position': self.position}

    def load_state_dict(self, state, world_size=None):
        """state as state_dict gave it; checkpoints before 2026-12-03 held each process's index into its share of
        the epoch instead, which is position / world_size (world_size: the processes that saved it)."""
        position = state['position'] if 'position' in state else state['index'] * (world_size or self.world_size)
        self.epoch, self.position, self._order = state['epoch'], position, None
