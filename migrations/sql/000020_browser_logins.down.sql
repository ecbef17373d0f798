DROP TABLE IF EXISTS browser_logins;
