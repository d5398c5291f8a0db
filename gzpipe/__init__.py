"""gzpipe: Galaxy Zoo 2 morphology pipeline."""
__version__ = "0.1.0"
