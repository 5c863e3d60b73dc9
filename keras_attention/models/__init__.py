"""Model builders; importing this module registers every architecture."""
