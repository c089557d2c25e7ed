DROP TABLE IF EXISTS stats_command_hours;
DROP TABLE IF EXISTS stats_login_hours;
DROP TABLE IF EXISTS stats_event_hours;
