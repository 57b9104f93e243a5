CREATE TABLE tickets (
    id       bigint PRIMARY KEY,
    body     text NOT NULL,
    category text
);

CREATE TABLE notes (
    id      bigint PRIMARY KEY,
    body    text NOT NULL,
    summary text
);
