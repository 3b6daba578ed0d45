"""Training-data synthesis for the SemiBlind blur-estimation CNN."""
