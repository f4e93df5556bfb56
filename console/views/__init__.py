"""The console's pages (for members of an account) and the staff pages added to
the admin site."""
