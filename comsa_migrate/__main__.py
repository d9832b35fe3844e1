"""`python -m comsa_migrate`: the comsa-migrate command."""

from comsa_migrate.cli import main

main(prog_name="comsa-migrate")
