"""manualbp: hand-written back-propagation for PyTorch research."""
__version__ = "0.1.0"
