"""Fault injection for Leadwire: a run that crashes, restarts and starves the services while
leads, returns and appointments flow, then checks that nothing was lost or doubled."""
