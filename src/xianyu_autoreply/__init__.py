"""xianyu-autoreply: keep many Xianyu (Goofish) seller accounts online and answer their buyers."""

__version__ = "0.1.0"
