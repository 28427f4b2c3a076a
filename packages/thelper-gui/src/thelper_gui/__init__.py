"""thelper-gui: OpenCV annotators and viewer for thelper."""

__version__ = "0.7.0.dev0"
