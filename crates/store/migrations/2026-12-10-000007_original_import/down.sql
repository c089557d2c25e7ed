DROP TABLE original_import_rows;
DROP TABLE original_imports;
