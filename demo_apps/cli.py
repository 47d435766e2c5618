"""Command-line pieces the demos share: the same usage style, and checked integers."""

import argparse


def parser(module, doc):
    """An ArgumentParser that shows ``python -m module`` as the program and ``doc`` as written."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def int_in(low, high=None, meaning=""):
    """An argparse type: an int in [low, high] (no upper bound if None); the error says ``meaning``."""

    def check(text):
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value}: must be {bounds}{meaning}")
        return value

    check.__name__ = "integer"  # argparse names the type in "invalid integer value: 'x'"
    return check
