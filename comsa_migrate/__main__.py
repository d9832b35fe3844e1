"""`python -m comsa_migrate`: the comsa-migrate command."""

from .cli import main

main(prog_name="comsa-migrate")
