-- One PostgreSQL server for the compose federation, a database per node (each node's
-- [store] url names its own). Run once by the postgres image on an empty data folder.
CREATE DATABASE liaison_de;
CREATE DATABASE liaison_fr;
CREATE DATABASE liaison_nl;
