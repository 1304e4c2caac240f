"""Screens of the console: campaigns, campaign, profile, builds, help."""
