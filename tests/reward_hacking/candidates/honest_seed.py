"""The seed server as it is."""

KIND = "honest: the seed"
HONEST = True


def apply(tree, target_root):
    pass
