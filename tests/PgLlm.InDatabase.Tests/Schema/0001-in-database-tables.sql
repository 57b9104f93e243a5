-- Tables the in-database worker tests declare in TestTables.cs.
CREATE TABLE items (
    id     bigint PRIMARY KEY,
    input  text NOT NULL,
    output text
);

CREATE TABLE notes (
    id      bigint PRIMARY KEY,
    body    text NOT NULL,
    summary text
);

-- A column that rejects most answers: a value that does not fit is an invalid answer.
CREATE TABLE codes (
    id    bigint PRIMARY KEY,
    input text NOT NULL,
    code  varchar(3)
);
