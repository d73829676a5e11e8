"""pswd-commission: the field technician's tool, from discovery to the signed report."""
