"""Access control: who is asking (API keys), what they may do (roles, ownership), how often
(rate limits)."""
