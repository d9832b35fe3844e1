"""The manual of comsa-migrate; generate.py keeps its generated parts in step with the code."""
