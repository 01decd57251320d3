"""Lossless-outside-the-hole JPEG output: restored JPEGs keep the source's own compressed blocks.

A JPEG is a grid of independently coded 8×8 DCT blocks. `splice_jpeg` takes the source's quantised DCT
coefficients, re-codes only the blocks whose pixels the restoration changed (with the source's own
quantisation tables) and copies every other block bit for bit, the way `jpegtran`'s lossless crop and drop
work. `write_restored_jpeg` is the output policy the job and the CLI use: splice where possible, else
re-encode, and say which and why.
"""
from pipeline.jpeg.output import JPEG_MODES, JpegMode, JpegWrite, check_jpeg_mode, write_restored_jpeg
from pipeline.jpeg.splice import SplicedJpeg, SpliceUnsupported, splice_jpeg

__all__ = ["JPEG_MODES", "JpegMode", "JpegWrite", "SplicedJpeg", "SpliceUnsupported", "check_jpeg_mode",
           "splice_jpeg", "write_restored_jpeg"]
