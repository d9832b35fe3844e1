"""All text for people: words, summaries, the report's formats, the daemons' status."""
