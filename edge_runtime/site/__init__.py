"""Site role: admission of workload announcements, site-level aggregate state, coordinator."""
