"""gzpipe: Galaxy Zoo 2 morphology pipeline."""
__version__ = "0.2.0"
