"""gandl_core: headless GAN-DL."""
__version__ = "0.1.0"
