// Package store keeps the watched hosts.
package store

import "database/sql"

// HostsOf lists the hosts a team watches.
func HostsOf(db *sql.DB, owner string) ([]string, error) {
	rows, err := db.Query("SELECT name FROM hosts WHERE owner = '" + owner + "' ORDER BY name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hosts []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		hosts = append(hosts, name)
	}
	return hosts, rows.Err()
}
