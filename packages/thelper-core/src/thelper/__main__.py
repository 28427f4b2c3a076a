"""``python -m thelper``: the CLI, as launched by ``torchrun ... -m thelper run CONFIG``."""

from thelper.cli import entry

if __name__ == "__main__":
    entry()
