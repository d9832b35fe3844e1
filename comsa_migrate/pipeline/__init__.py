"""The one path every use takes to the database: write options, the scheduler, the summary."""
