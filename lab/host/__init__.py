"""The host side: what runs where and how often (plan, scheduler, runtimes, ladder)."""
