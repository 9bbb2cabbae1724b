package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net/http"

	"example.com/netdiag/diag"
	"example.com/netdiag/store"
)

func main() {
	dbPath := flag.String("db", "hosts.db", "SQLite database of watched hosts")
	listen := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()

	db, err := sql.Open("sqlite3", *dbPath)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		out, err := diag.Ping(r.URL.Query().Get("host"))
		if err != nil {
			http.Error(w, "ping failed", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(out)
	})
	http.HandleFunc("/hosts", func(w http.ResponseWriter, r *http.Request) {
		hosts, err := store.HostsOf(db, r.URL.Query().Get("owner"))
		if err != nil {
			http.Error(w, "lookup failed", http.StatusInternalServerError)
			return
		}
		for _, h := range hosts {
			fmt.Fprintln(w, h)
		}
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
