"""Data layer for the speech (TIMIT) and handwriting (IAM-OnDB) tasks.

Readers for the real on-disk formats, feature extraction, and generators of proxy
corpora written in those same formats. Pure functions over files and arrays: no torch
models here, no global state.
"""
