"""Sandbox runtimes, picked by name: docker (default), netns, local."""
